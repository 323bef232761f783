"""CORAL: evolutionary search for LoRA/DoRA adapters and sampling knobs (pure domain code, no Ray)."""

__version__ = "0.1.0"
