"""TrajectoryPipelineMixin: the step-end callback both pipelines share, on its own and inside each
pipeline's loop (diffusers' contract: the callback sees the tensors it names, and a tensor it returns
replaces that one from then on)."""

from __future__ import annotations

import pytest
import torch
from pipelines_helpers import RUN, make_image, make_trajectory

from magicmotion.pipelines import MagicMotionCogVideoXPipeline, MagicMotionWanPipeline
from magicmotion.pipelines.pipeline_trajectory import TrajectoryPipelineMixin

NAMES = ["latents", "prompt_embeds", "negative_prompt_embeds", "trajectory_latents"]


def test_step_end_passes_the_named_tensors_and_takes_back_replacements():
    pipe = TrajectoryPipelineMixin()
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert pipe.step_end(None, 0, 999, ["a"], a=a, b=b, c=c) == (a, b, c)
    seen = {}
    new_b = torch.full((1,), 7.0)

    def callback(p, i, t, tensors):
        seen.update(pipe=p, step=i, t=t, names=sorted(tensors))
        return {"b": new_b, "not_a_tensor_of_ours": a}  # an unknown key is ignored, as in diffusers

    got = pipe.step_end(callback, 3, 500, ["b", "c"], a=a, b=b, c=c)
    assert got[0] is a and got[1] is new_b and got[2] is c
    assert seen == dict(pipe=pipe, step=3, t=500, names=["b", "c"])


@pytest.mark.parametrize("cls,folder,controlnet", [(MagicMotionWanPipeline, "wan", "wan_cn"),
                                                   (MagicMotionCogVideoXPipeline, "cog", "cog_cn")])
def test_each_pipeline_loop_uses_what_the_callback_returns(models_dir, cls, folder, controlnet):
    pipe = cls.from_pretrained(models_dir / folder, controlnet=models_dir / controlnet)
    pipe.set_progress_bar_config(disable=True)
    marks = {"prompt_embeds": 0.5, "negative_prompt_embeds": -0.5, "trajectory_latents": 0.25}
    seen = []

    def callback(p, i, t, tensors):
        seen.append({k: v.clone() for k, v in tensors.items()})
        out = {k: torch.full_like(tensors[k], v) for k, v in marks.items()} if i == 0 else {}
        out["latents"] = torch.full_like(tensors["latents"], 0.125)
        return out

    latents = pipe(image=make_image(), prompt="a red square", trajectory=make_trajectory(), kind="box",
                   generator=torch.Generator().manual_seed(0), output_type="latent", callback_on_step_end=callback,
                   callback_on_step_end_tensor_inputs=NAMES, **RUN).frames
    assert len(seen) == RUN["num_inference_steps"] == 2
    for name, value in marks.items():  # step 0's replacements are what step 1 ran with
        assert torch.equal(seen[1][name], torch.full_like(seen[0][name], value)), name
        assert not torch.equal(seen[0][name], seen[1][name]), name
    # the last step's latents are the output (no TI2V first frame to put back on these bases)
    assert torch.equal(latents, torch.full_like(latents, 0.125))
