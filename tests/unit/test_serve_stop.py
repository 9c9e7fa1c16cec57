"""serve(stop=...): setting the event from another thread stops every role."""

from __future__ import annotations

import threading

from monitor.run import _stop_when_set


class Role:
    def __init__(self) -> None:
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()


def test_setting_the_event_stops_every_role() -> None:
    roles, stop = [Role(), Role(), Role()], threading.Event()
    waiter = threading.Thread(target=_stop_when_set, args=(stop, roles))
    waiter.start()
    assert not any(r.stopped.wait(0.1) for r in roles)  # nothing before the event
    stop.set()
    waiter.join(5)
    assert not waiter.is_alive() and all(r.stopped.is_set() for r in roles)
