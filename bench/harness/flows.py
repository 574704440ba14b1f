"""One signing flow as a client runs it (create, the OTP by e-mail or from the device inbox,
sign), the sink's e-mails by request id, and the people idle between flows."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import httpx

from bench.harness.clients import LanePool, problem_code
from bench.harness.measure import PhaseStats
from tests.factories import Person
from tests.helpers import otp_from_message
from tests.mobile_app import MobileApp

OTP_TIMEOUT_SECONDS = 30.0
INBOX_WAIT_SECONDS = 25  # the app's long-poll (`wait`), the contract's maximum


# `--channel` value -> the `channel` of POST /v1/signing-requests (the contract's spelling).
CHANNELS = {"email": "email", "device": "mobile"}


# The median step between the create and the sign, per channel.
OTP_STEP = {"email": "e-mail", "device": "inbox"}


class Mailbox:
    """OTP e-mails by request id, handed from the sink's thread to the event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[str, asyncio.Future[EmailMessage]] = {}
        self._early: dict[str, EmailMessage] = {}
        # E-mails without a request id (device activation notices, signing notices), counted
        # in the sink's thread (an int increment under the GIL).
        self.others = 0
        # How many of those the server owes: one activation notice per seeded device, one
        # signing notice per signature (every seeded person has an e-mail address).
        self.owed = 0

    def notices_behind(self) -> int:
        return max(0, self.owed - self.others)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def unbind(self) -> None:
        self._loop = None
        self._waiting.clear()
        self._early.clear()

    def on_message(self, _path: Path | None, message: EmailMessage) -> None:
        """MailSink's callback, in the sink's thread."""
        loop, request_id = self._loop, message["X-Roamsign-Request-Id"]
        if not request_id:
            self.others += 1
        elif loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(self._arrived, str(request_id), message)

    def _arrived(self, request_id: str, message: EmailMessage) -> None:
        waiter = self._waiting.pop(request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
        else:  # the e-mail beat the 201 to us
            self._early[request_id] = message

    async def wait(self, request_id: str) -> EmailMessage:
        """The OTP e-mail of this request; the caller bounds the wait."""
        early = self._early.pop(request_id, None)
        if early is not None:
            return early
        assert self._loop is not None
        waiter: asyncio.Future[EmailMessage] = self._loop.create_future()
        self._waiting[request_id] = waiter
        try:
            return await waiter
        finally:
            self._waiting.pop(request_id, None)


class IdlePeople:
    """People with no flow in flight; a flow takes a random one and gives it back."""

    def __init__(self, people: list[Person], rng: random.Random) -> None:
        self._idle = list(people)
        self._rng = rng
        self._returned = asyncio.Condition()

    def try_take(self) -> Person | None:
        if not self._idle:
            return None
        index = self._rng.randrange(len(self._idle))
        self._idle[index], self._idle[-1] = self._idle[-1], self._idle[index]
        return self._idle.pop()

    async def take(self) -> Person:
        async with self._returned:
            await self._returned.wait_for(lambda: bool(self._idle))
            person = self.try_take()
            assert person is not None
            return person

    async def give_back(self, person: Person) -> None:
        async with self._returned:
            self._idle.append(person)
            self._returned.notify()


class StepFailed(Exception):
    """A step of a flow refused; the message is the kind the failure is counted under."""


class DeviceInbox:
    """The people's MyGPKI Mobile apps (by MyKad) fetching their OTP messages, as the real app
    does: `GET /v1/devices/{id}/messages?wait=25`, signed (RFC 9421, the app's P-256 key, a
    fresh nonce) by `tests.mobile_app.MobileApp`, on lanes of their own that carry no API key.

    The app asks once the OTP request has answered (as after a push notification), so the
    message is normally there already; the long-poll only matters when it is not."""

    def __init__(self, lanes: LanePool, apps: dict[str, MobileApp]) -> None:
        self._lanes = lanes
        self._apps = apps

    async def otp(self, person: Person, request_id: str) -> str:
        """The OTP of this request from the person's inbox; the caller bounds the wait.
        Messages of other requests (an earlier flow that gave up) are passed over."""
        app = self._apps[person.mykad]
        while True:
            # As MobileApp.fetch_request builds it, with no client needed to build it.
            request = app.sign(
                httpx.Request(
                    "GET",
                    f"{self._lanes.base_url}/v1/devices/{app.device_id}/messages",
                    params={"wait": INBOX_WAIT_SECONDS},
                )
            )
            async with self._lanes.client() as client:
                response = await client.send(request)
            if response.status_code != 200:
                raise StepFailed(f"inbox {response.status_code} {problem_code(response)}")
            for message in response.json()["messages"]:
                if message["request_id"] == request_id:
                    return str(message["otp"])


class FlowDriver:
    """Runs complete flows over one OTP channel (`email`, or `device` with `inbox`) and
    records them in the current phase's stats."""

    def __init__(
        self,
        lanes: LanePool,
        mailbox: Mailbox,
        label: str,
        *,
        channel: str = "email",
        inbox: DeviceInbox | None = None,
    ) -> None:
        if channel not in CHANNELS or (channel == "device") != (inbox is not None):
            raise ValueError("the device channel needs the inbox, and only it does")
        self._lanes = lanes
        self._mailbox = mailbox
        self._label = label
        self._channel = channel
        self._inbox = inbox
        self._counter = 0

    def _document_hash(self) -> str:
        self._counter += 1
        text = f"roamsign bench {self._label} {self._counter} {uuid.uuid4()}"
        return hashlib.sha256(text.encode()).hexdigest()

    async def flow(self, person: Person, stats: PhaseStats, started_at: float) -> None:
        """One flow; a failure is counted under its step, status and problem code."""
        stats.started += 1
        step = "create"
        steps: dict[str, float] = {}
        lap_start = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal lap_start
            now = time.perf_counter()
            steps[name], lap_start = now - lap_start, now

        try:
            async with self._lanes.client() as client:
                created = await client.post(
                    "/v1/signing-requests",
                    json={
                        "mykad": person.mykad,
                        "document_hash": self._document_hash(),
                        "document_name": f"Bench PV-{self._counter}",
                        "channel": CHANNELS[self._channel],
                    },
                )
            if created.status_code != 201:
                stats.failures[f"{step} {created.status_code} {problem_code(created)}"] += 1
                return
            request_id = created.json()["id"]
            lap("create")
            step = "otp"
            received = OTP_STEP[self._channel]
            try:
                async with asyncio.timeout(OTP_TIMEOUT_SECONDS):
                    otp = await self._receive(person, request_id)
            except TimeoutError:
                stats.failures[f"otp {received} timeout ({OTP_TIMEOUT_SECONDS:.0f} s)"] += 1
                return
            except StepFailed as refused:
                stats.failures[str(refused)] += 1
                return
            lap(received)
            step = "sign"
            async with self._lanes.client() as client:
                signed = await client.post(
                    f"/v1/signing-requests/{request_id}/signature",
                    json={"otp": otp, "pin": person.pin},
                )
            if signed.status_code != 201:
                stats.failures[f"{step} {signed.status_code} {problem_code(signed)}"] += 1
                return
            self._mailbox.owed += 1
            lap("sign")
            stats.success(started_at, steps)
        except httpx.TimeoutException as exc:
            stats.failures[f"{step} timeout ({type(exc).__name__})"] += 1
        except httpx.TransportError as exc:
            stats.failures[f"{step} transport {type(exc).__name__}"] += 1

    async def _receive(self, person: Person, request_id: str) -> str:
        if self._inbox is not None:
            return await self._inbox.otp(person, request_id)
        return otp_from_message(await self._mailbox.wait(request_id))
