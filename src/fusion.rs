//! Reciprocal-rank fusion of ranked lists.
