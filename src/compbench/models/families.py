"""The three model families compbench knows, named by architecture.

* ``encoder``: bidirectional encoders (XLM-R/AfriBERTa, BERT) — token classification here;
* ``decoder``: causal decoders (GPT-2) — language modelling (and token classification);
* ``encoder_decoder``: sequence-to-sequence models (BART) — summarization.

A model config declares its family (``model.family``) or it is read from the transformers
config; methods declare which families they support (``Method.supported_families``).
"""

FAMILIES = ("encoder", "decoder", "encoder_decoder")
