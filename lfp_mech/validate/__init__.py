"""The ``validate`` stage: describe the LFP features, their activation frequency, ablation."""

from lfp_mech.validate.ablation import *  # noqa: F403
from lfp_mech.validate.autointerp import *  # noqa: F403
