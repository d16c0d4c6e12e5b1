def run_benchmark(samples: int, burst: int, log_dir) -> str:  # placeholder until the bench lands
    raise NotImplementedError
