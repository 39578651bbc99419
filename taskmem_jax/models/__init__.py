"""Model families. Each lives in its own folder: config, modules, model, params (HF loading)."""
