"""Model presets as JSON (config as data); see encoders/config.py."""
