"""CPU models as data (models.toml), read by edgec.targets.cpu_models."""
