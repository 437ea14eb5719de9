"""MagicData curation: raw videos + captions -> clips with object masks and boxes in the dataset
layout (docs/data-pipeline.md).

Stages, each a function over one clip (stages.py): ingest (scene cuts, clips of a target length;
ingest.py) -> objects from the caption (a chat language model, or given; objects.py) -> grounding in
the first frame (Grounding DINO) -> tracking through the clip (SAM 2 video) -> write (DatasetWriter);
the two models are perception's (`magicmotion.perception`). A SQLite manifest (manifest.py) records each clip's stage and
status so a run resumes; runners.py runs the stages locally or on Ray Data.
"""

from .ingest import (IngestConfig, SourcePlan, plan_clips, plan_source, read_clip, read_inputs,
                     scan_video, scenes_from_cuts)
from .manifest import ClipRow, Manifest, SourceRow
from .objects import (DEFAULT_LLM, GivenObjects, LanguageModelObjects, ObjectsAnswerError,
                      ObjectsResult, parse_objects, validate_objects)
from .runners import (MANIFEST, CurationSummary, curate, plan_sources, plan_sources_ray, run_local,
                      run_ray)
from .stages import (CurationConfig, CurationModels, grounding_stage, load_stage, masks_to_trajectory,
                     new_task, objects_stage, tracking_stage, write_stage)

__all__ = [
    "DEFAULT_LLM", "MANIFEST",
    "ClipRow", "CurationConfig", "CurationModels", "CurationSummary", "GivenObjects",
    "IngestConfig", "LanguageModelObjects", "Manifest", "ObjectsAnswerError",
    "ObjectsResult", "SourcePlan", "SourceRow", "curate", "grounding_stage", "load_stage",
    "masks_to_trajectory", "new_task", "objects_stage", "parse_objects", "plan_clips", "plan_source",
    "plan_sources", "plan_sources_ray",
    "read_clip", "read_inputs", "run_local", "run_ray", "scan_video", "scenes_from_cuts",
    "tracking_stage", "validate_objects", "write_stage",
]
