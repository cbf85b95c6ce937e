"""The runner daemon: claims tasks and runs each in a supervised subprocess."""
from tensorhub.runner.daemon import Runner, RunnerConfig

__all__ = ["Runner", "RunnerConfig"]
