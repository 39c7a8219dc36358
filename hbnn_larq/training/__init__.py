"""The training application behind `train.py`, importable so that benchmarks can run it in-process.

```python
from hbnn_larq.training import TrainConfig, train
results = train(TrainConfig(model="vggsmall", dataset="cifar10", width=0.25, epochs=1))
```

Modules: `config` (`TrainConfig`, validation, the default run directory), `recipes` (named
weight-binarization recipes), `sources`, `image_folders` and `data` (datasets and input
pipelines), `optimizer` (SGD with coupled weight decay, the learning-rate schedule), `callbacks`,
`provenance` (versions, machine) and `run` (`train`: one run, resumed, evaluated and exported).
The library (`hbnn_larq` outside this package) never imports it.
"""

from hbnn_larq.training import (callbacks, config, data, image_folders, optimizer, provenance, recipes, run,  # noqa: F401
                                sources)
from hbnn_larq.training.config import ConfigError, TrainConfig
from hbnn_larq.training.run import summary_text, train

__all__ = ["ConfigError", "TrainConfig", "callbacks", "config", "data", "image_folders", "optimizer", "provenance",
           "recipes", "run", "sources", "summary_text", "train"]
