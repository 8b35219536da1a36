"""qa-compress: measure what pruning and quantization cost a SQuAD 2.0 QA model, and what they buy."""
