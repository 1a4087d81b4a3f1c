"""MongoDB (pymongo): connection usage for the pool-exhaustion diagnosis."""
