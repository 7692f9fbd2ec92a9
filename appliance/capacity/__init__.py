"""Capacity: how much this box serves, measured, and how serving should be set.

- ``measure``: measurement windows repeated until stable (as perf_analyzer does),
  percentiles, and what a process holds (GPU memory from NVML, resident memory and
  CPU time where there is no GPU).
- ``profile``: the sweep of one model version, loaded as the serving daemon loads it:
  batch size and concurrency for a tabular model; concurrent streams and prompt and
  answer lengths for a language model.
- ``store``: profiles, stored with the version they measured.
- ``fit``: the service time of one run against its batch size, t(b) = a + c·b.
- ``simulate``: a discrete-event simulation of the dynamic batcher, replaying
  arrivals against a fitted service time.
- ``report``: the request log and the profiles read together: demand, utilisation,
  the recommended serving settings and memory to reserve, checked by the simulation.
"""
