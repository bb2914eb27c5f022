"""Built-in optimizers, each a short chain of gradient transformations (optax's shape).

The links and the chain are public: a third-party optimizer composes them like the
built-ins do (``from smx.optimizers import chain, scale_by_adam,
scale_by_learning_rate``). Everything here is written against the Array API only.
"""

from smx.optimizers.transforms import (
    ScalarOrSchedule,
    add_decayed_weights,
    apply_updates,
    chain,
    clip_by_global_norm,
    counter,
    decay_mask,
    global_norm,
    identity,
    scale,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_schedule,
    stateless,
    trace,
    tree_map,
    zeros_like,
)
from smx.types import Transform

__all__ = [
    "ScalarOrSchedule",
    "Transform",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "counter",
    "decay_mask",
    "global_norm",
    "identity",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_schedule",
    "stateless",
    "trace",
    "tree_map",
    "zeros_like",
]
