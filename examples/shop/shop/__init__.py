"""A toy shop whose order pricing runs on a Flame cluster through flamepy_runner."""
