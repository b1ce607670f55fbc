"""Optional MQTT publishing of action events as JSON (as NVR tools such as Frigate do).

Messages go to `<topic>/<camera_id>` with QoS 1: `{"type": "start" | "end", "run_id": ..., "event": {...}}`. The
client runs its own network thread (paho's `loop_start`) and reconnects by itself; a broker that is down costs a
warning, never the run (events are in the store and DIR/events.jsonl regardless).
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

log = logging.getLogger("mcsa.events")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port or 1883}"


class MqttPublisher:
    """Publishes JSON payloads to an MQTT broker given as `mqtt://[user:pass@]host[:port]`."""

    def __init__(self, url: str, topic: str = "mcsa/events", client_id: str = "", connect_timeout_s: float = 3.0):
        import paho.mqtt.client as mqtt

        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp", "mqtts") or not parts.hostname:
            raise ValueError(f"events.mqtt_url {_redact(url)!r}: expected mqtt://host[:port]")
        self.topic = topic.rstrip("/")
        self.shown = _redact(url)
        self.published = 0
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if parts.username:
            self._client.username_pw_set(parts.username, parts.password)
        if parts.scheme == "mqtts":
            self._client.tls_set()
        self._client.reconnect_delay_set(1, 30)
        try:
            self._client.connect(parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                                 keepalive=30)
        except OSError as err:  # the loop keeps retrying in the background
            log.warning("MQTT broker %s not reachable (%s): events will be published once it is", self.shown, err)
            self._client.connect_async(parts.hostname, parts.port or 1883, keepalive=30)
        self._client.loop_start()

    def publish(self, camera_id: str, payload: dict) -> None:
        self._client.publish(f"{self.topic}/{camera_id}", json.dumps(payload), qos=1)
        self.published += 1

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (up to `timeout_s`), then disconnect."""
        import time

        deadline = time.monotonic() + timeout_s
        while self._client.want_write() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._client.disconnect()
        self._client.loop_stop()


__all__ = ["MqttPublisher"]
