"""Deploy platforms: Vercel, Railway and generic HTTP providers, and the app restart hook."""
