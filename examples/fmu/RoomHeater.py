"""A room warmed by a heater and cooled through its walls: the demo FMU (FMI 2.0 co-simulation).

`validibot build-fmu examples/fmu/RoomHeater.py` turns this into RoomHeater.fmu with pythonfmu.
"""

from pythonfmu import Fmi2Causality, Fmi2Slave, Fmi2Variability, Real

WALL_CONDUCTANCE_W_PER_K = 100.0
HEAT_CAPACITY_J_PER_K = 5.0e5


class RoomHeater(Fmi2Slave):
    author = "validibot"
    description = "Room temperature under a heater, with heat lost through the walls"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.heater_power = 1500.0
        self.outdoor_temperature = 5.0
        self.initial_temperature = 18.0
        self.room_temperature = self.initial_temperature
        self.register_variable(Real("heater_power", causality=Fmi2Causality.input))
        self.register_variable(Real("outdoor_temperature", causality=Fmi2Causality.input))
        self.register_variable(
            Real("initial_temperature", causality=Fmi2Causality.parameter, variability=Fmi2Variability.fixed)
        )
        self.register_variable(Real("room_temperature", causality=Fmi2Causality.output))

    def exit_initialization_mode(self):
        self.room_temperature = self.initial_temperature

    def do_step(self, current_time, step_size):
        loss = WALL_CONDUCTANCE_W_PER_K * (self.room_temperature - self.outdoor_temperature)
        self.room_temperature += (self.heater_power - loss) * step_size / HEAT_CAPACITY_J_PER_K
        return True
