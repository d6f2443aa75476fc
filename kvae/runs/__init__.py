"""Training runs: `train` a new run into a directory, `resume` one, and
`evaluate` its model. The directory's layout and its readers are in
kvae.rundir; the settings (TrainConfig) in kvae.config. Modules: `lifecycle`
(train, resume), `data`, `building` (recipe, model, config.json), `fitting`,
`cluster` (multi-worker), `evaluation`, `tools` (what the CLI does with a
trained run: score tables, the anomaly report, the scorer's thresholds).

Trust rules, each tested by fault injection (tests/test_faults.py):
  - nothing on disk changes until the config, the data (every split, whole)
    and the model have been validated; `--force` deletes the old run only then;
  - one process per run directory (an exclusive lock on the directory);
  - every file is written whole or not at all (kvae.files), and a failed or
    interrupted new run that finished no epoch leaves no directory behind;
  - `--resume` refuses a missing or corrupt state.json or config.json, and
    flags that would change the run, naming them.
"""

from kvae.runs.building import build_model, config_from_file, recipe_of
from kvae.runs.cluster import weights_digest
from kvae.runs.data import prepare_data, prepare_inputs, stream_inputs
from kvae.runs.evaluation import evaluate
from kvae.runs.lifecycle import resume, resume_config, train
from kvae.runs.tools import anomaly_report, score_table, scorer_thresholds, test_inputs

__all__ = ["train", "resume", "resume_config", "evaluate", "prepare_data", "prepare_inputs", "stream_inputs",
           "build_model", "config_from_file", "recipe_of", "weights_digest", "test_inputs", "score_table", "anomaly_report",
           "scorer_thresholds"]
