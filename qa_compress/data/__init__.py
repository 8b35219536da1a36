"""SQuAD 2.0 data: the JSON format, Hub and file loading, generated data, tokenized windows."""
