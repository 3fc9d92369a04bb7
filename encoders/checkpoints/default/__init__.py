"""The bundled default checkpoint: config.json, model.safetensors, model_version.txt."""
