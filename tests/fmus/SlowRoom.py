"""A test FMU whose every step takes a tenth of a second of wall-clock time: a job that is still running."""

import time

from pythonfmu import Fmi2Causality, Fmi2Slave, Real


class SlowRoom(Fmi2Slave):
    author = "validibot tests"
    description = "Sleeps in every step"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.room_temperature = 20.0
        self.register_variable(Real("room_temperature", causality=Fmi2Causality.output))

    def do_step(self, current_time, step_size):
        time.sleep(0.1)
        return True
