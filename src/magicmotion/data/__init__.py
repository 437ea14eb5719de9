"""Datasets: the shared layout (`dataset`), the synthetic world (`synthetic`), curation and filtering."""
