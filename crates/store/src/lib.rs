//! The object store: Kubernetes-style objects (JSON) in one embedded SQLite file, with uid,
//! resourceVersion, generation, optimistic concurrency and resumable watch streams.
