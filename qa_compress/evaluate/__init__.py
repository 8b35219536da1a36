"""Scoring and measuring: prediction, the official SQuAD 2.0 scorer, intervals, timing, the null threshold."""
