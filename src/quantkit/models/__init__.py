"""Models quantkit quantizes: loading a user's checkpoint, and the embedded default model."""
