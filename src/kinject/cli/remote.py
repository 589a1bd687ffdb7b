"""The commands that can talk to a running ``kinject serve`` instead of loading the models
themselves (``--url``): one httpx client with the API key, the server's answers turned back
into the values the in-process path returns (Hit, Answer), so the same renderers print
them, and every failure (refused, unreachable, 401, 404, 5xx) one line."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from kinject.errors import KinjectError
from kinject.types import Answer, Citation, Hit, Route

if TYPE_CHECKING:
    import httpx

# An answer on a busy CPU server takes tens of seconds; a search, well under one.
TIMEOUT_S = 300.0

UrlOpt = Annotated[str | None, typer.Option(
    help="Ask a running `kinject serve` (e.g. http://127.0.0.1:8000) instead of loading the "
         "models in this process; --sync, --config and --data-dir are then unused.")]
ApiKeyOpt = Annotated[str | None, typer.Option(
    envvar="KINJECT_API_KEY", help="API key for --url (read role), when the server needs one.")]


class ServerError(KinjectError):
    """A server given by ``--url`` could not be reached or refused the request."""

    code = "server_error"


@contextmanager
def server_client(url: str, api_key: str | None, timeout_s: float = TIMEOUT_S
                  ) -> Iterator[httpx.Client]:
    """An httpx client for ``url`` that sends ``api_key`` as a bearer token."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url.rstrip("/") + "/", headers=headers,
                      timeout=timeout_s) as client:
        yield client


def error_detail(response: httpx.Response) -> str:
    """The message of a kinject error body ({"error": {"message": ...}}), else the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or body["error"])
    return str(body.get("detail", body) if isinstance(body, dict) else body)[:300]


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    where = f"{client.base_url}{path.lstrip('/')}"
    try:
        r = client.request(method, path.lstrip("/"), **kwargs)
    except httpx.TimeoutException as exc:
        raise ServerError(f"{method} {where}: no answer within {client.timeout.read} s"
                          ) from exc
    except httpx.HTTPError as exc:
        raise ServerError(f"cannot reach {client.base_url} ({exc}); is `kinject serve` "
                          "running there?") from exc
    if r.status_code == 200:
        return r.json()
    hint = ""
    if r.status_code in (401, 403):
        hint = " (pass a key with --api-key or KINJECT_API_KEY)"
    elif r.status_code == 404:
        hint = f" (is {client.base_url} a kinject server?)"
    raise ServerError(f"{method} {where} answered {r.status_code}: {error_detail(r)}{hint}")


def search(client: httpx.Client, query: str, k: int, filters: Sequence[str],
           mode: str | None) -> list[Hit]:
    """``GET /v1/search``'s hits, as the facade's search returns them."""
    params: list[tuple[str, str | int]] = [("q", query), ("k", k)]
    params += [("filter", f) for f in filters]
    if mode is not None:
        params.append(("mode", mode))
    body = _call(client, "GET", "v1/search", params=params)
    return [Hit(h["chunk_id"], h["source_id"], h["text"], float(h["score"]),
                dict(h.get("meta") or {})) for h in body["hits"]]


def ask(client: httpx.Client, question: str, k: int | None, filters: Sequence[str],
        route: str) -> Answer:
    """``POST /v1/ask``'s answer, as the facade's ask returns it."""
    payload: dict[str, Any] = {"question": question, "filters": list(filters), "route": route}
    if k is not None:
        payload["k"] = k
    a = _call(client, "POST", "v1/ask", json=payload)
    citations = tuple(
        Citation(n=c["n"], source_id=c["source_id"], chunk_id=c["chunk_id"],
                 score=float(c["score"]), snippet=c["snippet"], start_s=c.get("start_s"),
                 end_s=c.get("end_s"), page=c.get("page"))
        for c in a.get("citations") or [])
    return Answer(text=a["text"], citations=citations, images=tuple(a.get("images") or ()),
                  adapter_version=a.get("adapter_version"),
                  route=cast(Route, a.get("route") or route),
                  abstained=bool(a.get("abstained")),
                  timings={k: float(v) for k, v in (a.get("timings") or {}).items()})
