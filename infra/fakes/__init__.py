"""Local fakes of third-party SaaS APIs (Vercel, Railway), shaped exactly as their docs say.

Used by the tests, the benchmarks and the demo stack. Each is a FastAPI app with a
`/_fake/...` control API to set up a scenario and read back what was called.
"""
