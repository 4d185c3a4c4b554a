"""What the tests and the benches both start, as ``torch.testing`` and Ray's ``cluster_utils`` serve their
projects: loopback object stores (:mod:`.stores`), a tiny served gallery (:mod:`.galleries`), the Serve app on a free
port with its replicas and HAProxy log watched (:mod:`.serve`), and autoscaling under real HTTP load
(:mod:`.autoscale`). Dev dependencies (moto, the GCS emulator, httpx) are needed only by what uses them; nothing
in the library proper imports this package."""
