"""The FMU simulation child: `python -m jobs.validators.fmu_simulate request.json`.

An FMU is native code from the user. It runs here, in a process of its own that the FMU validator can kill at its
timeout, and reports through files: the time series as CSV and `outcome.json` with the final value and the range
of each output, or the error that stopped the simulation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUTCOME_NAME = "outcome.json"
RESULTS_NAME = "results.csv"


def simulate(request: dict[str, Any]) -> dict[str, Any]:
    import fmpy
    from fmpy.util import write_csv

    result = fmpy.simulate_fmu(
        request["unzipdir"],
        validate=False,  # validated already, with a parser that refuses DTDs
        start_time=request["start_time"],
        stop_time=request["stop_time"],
        step_size=request["step_size"],
        output_interval=request["step_size"],
        start_values=request["input_values"],
        output=request["output_variables"],
        remote_platform=None,
    )
    write_csv(Path(request["workdir"]) / RESULTS_NAME, result)
    series = {}
    for name in request["output_variables"]:
        values = result[name]
        low, high = int(values.argmin()), int(values.argmax())
        series[name] = {
            "final": float(values[-1]),
            "min": float(values[low]),
            "min_time": float(result["time"][low]),
            "max": float(values[high]),
            "max_time": float(result["time"][high]),
        }
    return {"outputs": series, "samples": len(result)}


def main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    outcome_path = Path(request["workdir"]) / OUTCOME_NAME
    try:
        outcome = simulate(request)
    except Exception as exc:
        outcome_path.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    outcome_path.write_text(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
