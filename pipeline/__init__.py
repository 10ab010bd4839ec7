"""kasp stages: one module per DVC stage (`python -m pipeline.<stage>`), each reading its own params.yaml
section and writing metrics/<stage>.json. Stages import the library (pipeline.core, pipeline.training,
export, deploy, eval) and never each other."""
