"""Model assembly: video models, the context-agnostic segment model, the context-aware model."""
