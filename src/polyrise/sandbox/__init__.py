"""The cloned-language sandbox: a small world with a known language imbalance, built and measured on CPU in minutes.

- `world`: the synthetic arithmetic task in English and the cloned languages `qaa` (English word order) and `qab`
  (reversed);
- `tokenizer`: the model's word-level tokenizer and chat template;
- `data`: the imbalanced training mix (`DataMix`), its example builders, the held-out splits and data-file rows;
- `build`: training the tiny Llama from scratch (`PretrainSettings`), its English alignment (`AlignSettings`) and
  `build_sandbox`, which writes the model dirs, prompts, eval and translation files and `sandbox.json`
  (`polyrise sandbox build`);
- `measure`: M0's task accuracy and self-translation exact match, `summary_table`;
- `study`: seeded studies of the unmodified pipeline on sandboxes (`polyrise sandbox study`).
"""

from polyrise.sandbox.build import AlignSettings, ModelSize, PretrainSettings, SandboxInfo, build_sandbox, summary_table
from polyrise.sandbox.data import DataMix, Sizes
from polyrise.sandbox.study import run_study
from polyrise.sandbox.world import CLONES

__all__ = [
    "CLONES",
    "AlignSettings",
    "DataMix",
    "ModelSize",
    "PretrainSettings",
    "SandboxInfo",
    "Sizes",
    "build_sandbox",
    "run_study",
    "summary_table",
]
