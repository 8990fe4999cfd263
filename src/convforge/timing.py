"""Wall-clock timing, one way everywhere: epochs, trainings, builds and runtime latencies."""
import statistics
import time


class Stopwatch:
    """Seconds since creation (or the last restart), from the monotonic performance counter."""

    def __init__(self):
        self.restart()

    def restart(self):
        """Start counting again from now."""
        self._start = time.perf_counter()

    @property
    def seconds(self):
        """Seconds elapsed."""
        return time.perf_counter() - self._start


def median_ms(run, sample, runs=10, warmup=2):
    """Median wall time in milliseconds of `runs` calls of run(sample), after `warmup` calls."""
    for _ in range(warmup):
        run(sample)
    times = []
    for _ in range(runs):
        clock = Stopwatch()
        run(sample)
        times.append(clock.seconds * 1000.0)
    return statistics.median(times)
