r"""State-space models and long convolutions (chapter 06).

- :mod:`~minilib.ssm.lti`: discretisation (ZOH, bilinear), HiPPO-LegS, S4D initialisations, the S4D
  convolution kernel and the recurrence of the same model, the LMU's Legendre delay system;
- :mod:`~minilib.ssm.conv`: causal convolution as matrix products (FlashFFTConv); :func:`fft_conv` and
  :func:`direct_causal_conv` come from the core module :mod:`minilib.convolution`, which chapter 07's mixers share;
- :mod:`~minilib.ssm.selective`: Mamba's selective scan in three forms, the scalar-decay SSD form, and
  the mixing matrices that show an SSM as (masked, gated) linear attention;
- :mod:`~minilib.ssm.distill`: MOHAWK's three stages: matrices, then block outputs aligned (:func:`~minilib.ssm.distill.align`), then logits distilled;
- :mod:`~minilib.ssm.hydra`: the bidirectional quasiseparable mixer as two scans and a diagonal;
- :mod:`~minilib.ssm.hyena`: Hyena's implicit long filters with gating (``"hyena"`` mixer), 1-D and 2-D (``"hyena2d"`` over an image's patch grid);
- :mod:`~minilib.ssm.lmu`: the Legendre memory as a token mixer (``"lmu"``), convolution in training, recurrence when decoding;
- :mod:`~minilib.ssm.memory`: a test-time memory trained by the Omega rule while it reads (ATLAS), token by token or chunk-parallel, LM2's gated memory bank;
- :mod:`~minilib.ssm.mixers`: the ``"mamba"``, ``"s4d"`` and ``"h3"`` token mixers, registered on import;
- :mod:`~minilib.ssm.rodimus`: Rodimus's DDTS-gated memory (``"rodimus"``) and Rodimus+'s shared-key window attention;
- :func:`associative_scan` (from :mod:`minilib.scan`), the log-depth scan under all of them.
"""
from minilib.convolution import direct_causal_conv, fft_conv
from minilib.scan import ScanCounter, associative_scan
from minilib.ssm.conv import monarch_fft_conv
from minilib.ssm.distill import SSDMatrixStudent, align, distillation_loss, fit_ssd_to_attention
from minilib.ssm.hydra import hydra, hydra_matrix
from minilib.ssm.hyena import Hyena2D, Hyena2DMixer, HyenaMixer, ImplicitFilter, fft_conv2d
from minilib.ssm.lti import (DISCRETIZATIONS, discretize, discretize_diagonal, hippo_legs, legendre_readout,
                             lmu_conv, lmu_matrices, lmu_recurrent, s4d_init, s4d_kernel, s4d_recurrent)
from minilib.ssm.lmu import LMUMixer
from minilib.ssm.memory import GatedMemory, omega_memory, omega_memory_chunked
from minilib.ssm.mixers import H3Mixer, MambaMixer, S4DMixer, SSMCache
from minilib.ssm.rodimus import RodimusMixer, ddts_gates, rodimus_scan, shared_key_window_attention
from minilib.ssm.selective import (linear_recurrence_combine, selective_scan_chunked, selective_scan_parallel,
                                   selective_scan_recurrent, ssd_chunked, ssd_matrix, ssd_recurrent, ssm_matrix)

__all__ = [
    "ScanCounter", "associative_scan",
    "direct_causal_conv", "fft_conv", "monarch_fft_conv",
    "DISCRETIZATIONS", "discretize", "discretize_diagonal", "hippo_legs", "s4d_init", "s4d_kernel", "s4d_recurrent",
    "lmu_matrices", "legendre_readout", "lmu_recurrent", "lmu_conv", "LMUMixer",
    "linear_recurrence_combine", "selective_scan_recurrent", "selective_scan_parallel", "selective_scan_chunked",
    "ssm_matrix", "ssd_recurrent", "ssd_chunked", "ssd_matrix",
    "hydra", "hydra_matrix", "fft_conv2d", "ImplicitFilter", "HyenaMixer", "Hyena2D", "Hyena2DMixer",
    "omega_memory", "omega_memory_chunked", "GatedMemory",
    "SSDMatrixStudent", "fit_ssd_to_attention", "align", "distillation_loss", "MambaMixer", "S4DMixer", "H3Mixer", "SSMCache",
    "ddts_gates", "rodimus_scan", "RodimusMixer", "shared_key_window_attention",
]
