"""The delta model that ships: key frames, delta frames, liveness, replay, the runner."""
