"""`parley serve`, `parley keys ...`, `parley prompts ...`, `parley files upload`, `parley vector-stores create`,
`parley usage`, `parley db ...`, `parley config show`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError

from parley.cli.vector_stores import vector_stores_app
from parley.config import Settings, export_flags, load_settings, redacted
from parley.log_setup import configure_logging

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Parley: an OpenAI Responses API server.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (stored hashed; project or admin keys).")
prompts_app = typer.Typer(no_args_is_help=True, help="Manage prompt templates (per project, versioned).")
files_app = typer.Typer(no_args_is_help=True, help="Files (as POST /v1/files stores them, per project).")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration.")
app.add_typer(keys_app, name="keys")
app.add_typer(prompts_app, name="prompts")
app.add_typer(files_app, name="files")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(vector_stores_app, name="vector-stores")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file (or PARLEY_CONFIG_FILE)")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (SQLite, files)")]
DbOpt = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL; default SQLite in data dir")]


def _settings(**flags: Any) -> Settings:
    try:
        return load_settings(**flags)
    except ValidationError as exc:  # configuration errors are the operator's: one plain line each
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "configuration"
            typer.echo(f"parley: invalid configuration: {where}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:
        typer.echo(f"parley: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"parley {package_version('parley')}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Parley: an OpenAI Responses API server."""


async def _any_key(settings: Settings) -> bool:
    from parley.store.sql import SqlStore

    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await SqlStore.open(settings.effective_database_url)
    try:
        return await store.any_active_key()
    finally:
        await store.close()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080)")] = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    config: ConfigOpt = None,
    log_level: Annotated[str | None, typer.Option(help="debug|info|warning|error")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes sharing the port (default 1)")] = None,
) -> None:
    """Start the server."""
    flags: dict[str, Any] = {"host": host, "port": port, "data_dir": data_dir, "database_url": database_url,
                             "config_file": config, "log_level": log_level, "workers": workers}
    settings = _settings(**flags)
    if settings.workers > 1 and settings.embedded.enabled:
        typer.echo("parley: the embedded model runs in a single process; use --workers 1, or set "
                   "[embedded] enabled = false (PARLEY_EMBEDDED__ENABLED=false).", err=True)
        raise typer.Exit(2)
    configure_logging(settings.log_level, settings.log_format)  # also keeps key hashes out of third-party logs
    if not settings.binds_loopback and not settings.allow_unauthenticated_remote:
        # auth "none", or "auto" with no key yet, would serve this address to anyone (api/auth.py).
        if settings.auth == "none" or (settings.auth == "auto" and not asyncio.run(_any_key(settings))):
            typer.echo(
                f"parley: refusing to listen on {settings.host} without API keys (auth = \"{settings.auth}\"); "
                "create one with `parley keys create`, set auth = \"keys\", bind 127.0.0.1, or set "
                "PARLEY_ALLOW_UNAUTHENTICATED_REMOTE=true.",
                err=True,
            )
            raise typer.Exit(2)
    import uvicorn

    from parley.api.serving import uvicorn_options
    from parley.app import create_app

    if settings.workers > 1:
        # Each worker process builds its own app from the same flags (passed down as PARLEY_* variables);
        # they share the database, and background runs are claimed by whichever worker is free.
        export_flags(flags)
    target: Any = "parley.app:app_from_settings" if settings.workers > 1 else create_app(settings, serving=True)
    # The header deadline protocol for HTTP, WebSocket mode, ... (api/serving.py).
    uvicorn.run(
        target, factory=settings.workers > 1, workers=settings.workers if settings.workers > 1 else None,
        host=settings.host, port=settings.port, log_level=settings.log_level, timeout_graceful_shutdown=10,
        **uvicorn_options(settings),
        # JSON logs: uvicorn's own loggers keep no handlers of their own and write through the root's JSON lines.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )


def _store_call(settings: Settings, method: str, *args: Any) -> Any:
    from parley.store.sql import SqlStore

    async def run() -> Any:
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await SqlStore.open(settings.effective_database_url)
        try:
            return await getattr(store, method)(*args)
        finally:
            await store.close()

    return asyncio.run(run())


RoleOpt = Annotated[Literal["project", "admin"], typer.Option(
    help="project: the API of its project; admin: only the /v1/organization endpoints (usage, costs, keys)")]
ExpiresOpt = Annotated[float | None, typer.Option("--expires-in-days", min=0, help="Expires after this many days")]
AllowOpt = Annotated[list[str] | None, typer.Option("--allow-model", help="Only these models (repeat; default: all)")]
RpmOpt = Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute")]
TpmOpt = Annotated[int | None, typer.Option("--tpm", min=1, help="Tokens per minute")]
DayOpt = Annotated[float | None, typer.Option("--spend-per-day", min=0, help="USD per UTC day")]
MonthOpt = Annotated[float | None, typer.Option("--spend-per-month", min=0, help="USD per UTC month")]


def _key_json(record: Any, secret: str | None = None) -> str:
    from parley.services.keys import key_object

    body = key_object(record, secret)
    # `project` and `key`: the names this command printed before roles existed (scripts read them).
    line = {"id": body["id"], "project": record.project_id, "name": body["name"], "role": body["role"],
            "prefix": record.key_prefix, "created_at": body["created_at"], "expires_at": body["expires_at"],
            "state": "revoked" if record.revoked_at else "active", "allowed_models": body["allowed_models"],
            "limits": body["limits"]}
    if secret is not None:
        line["key"] = secret
    return json.dumps(line)


def _limits(rpm: int | None, tpm: int | None, day: float | None, month: float | None, base: Any = None) -> Any:
    """RateLimits from the options given, over `base` (a key's current limits); None if none is set."""
    from parley.config import RateLimits

    values = base.model_dump(exclude_none=True) if base is not None else {}
    for name, value in (("requests_per_minute", rpm), ("tokens_per_minute", tpm), ("spend_per_day_usd", day),
                        ("spend_per_month_usd", month)):
        if value is not None:
            values[name] = value
    return RateLimits(**values) if values else None


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option(help="Project the key belongs to")] = "default",
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    role: RoleOpt = "project", expires_in_days: ExpiresOpt = None, allow_model: AllowOpt = None,
    rpm: RpmOpt = None, tpm: TpmOpt = None, spend_per_day: DayOpt = None, spend_per_month: MonthOpt = None,
    data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Create a key; the secret is printed once and never stored."""
    from parley.store.base import KeySpec

    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    limits = _limits(rpm, tpm, spend_per_day, spend_per_month)
    if role == "admin" and (allow_model or limits is not None):
        typer.echo("parley: an admin key makes no model requests: no --allow-model or limits", err=True)
        raise typer.Exit(2)
    expires = int(time.time() + expires_in_days * 86400) if expires_in_days is not None else None
    spec = KeySpec(name or (project if role == "project" else "admin"), role, expires,
                   tuple(allow_model) if allow_model else None, limits)
    record, secret = _store_call(settings, "create_key", project, spec.name, spec)
    typer.echo(_key_json(record, secret))


@keys_app.command("list")
def keys_list(
    project: Annotated[str | None, typer.Option(help="Only this project's keys")] = None,
    data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    for record in _store_call(settings, "list_keys", project):
        typer.echo(_key_json(record))


@keys_app.command("update")
def keys_update(
    key_id: str,
    name: Annotated[str | None, typer.Option(help="A new label")] = None,
    expires_in_days: ExpiresOpt = None,
    never_expires: Annotated[bool, typer.Option("--never-expires", help="Remove the expiry")] = False,
    allow_model: AllowOpt = None,
    all_models: Annotated[bool, typer.Option("--all-models", help="Allow every model again")] = False,
    rpm: RpmOpt = None, tpm: TpmOpt = None, spend_per_day: DayOpt = None, spend_per_month: MonthOpt = None,
    no_limits: Annotated[bool, typer.Option("--no-limits", help="Remove every limit of the key")] = False,
    data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Change an active key's name, expiry, allowed models or limits (the options given; limits given are set
    and the key's other limits kept)."""
    from parley.store.base import KeySpec

    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    current = _store_call(settings, "get_key", key_id)
    if current is None or current.revoked_at is not None:
        typer.echo(f"parley: no active key with id {key_id}", err=True)
        raise typer.Exit(1)
    keep = {"name", "expires_at", "allowed_models", "limits"}
    if name is not None:
        keep.discard("name")
    if expires_in_days is not None or never_expires:
        keep.discard("expires_at")
    if allow_model or all_models:
        keep.discard("allowed_models")
    limits = None if no_limits else _limits(rpm, tpm, spend_per_day, spend_per_month, current.limits)
    if no_limits or limits != current.limits:
        keep.discard("limits")
    expires = int(time.time() + expires_in_days * 86400) if expires_in_days is not None else None
    spec = KeySpec(name or "", current.role, expires, tuple(allow_model) if allow_model else None, limits,
                   keep=frozenset(keep))
    typer.echo(_key_json(_store_call(settings, "update_key", key_id, spec)))


@keys_app.command("revoke")
def keys_revoke(
    key_id: str, data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None
) -> None:
    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    if not _store_call(settings, "revoke_key", key_id):
        typer.echo(f"parley: no active key with id {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@app.command("usage")
def usage(
    start: Annotated[str | None, typer.Option(help="Unix seconds or ISO date/time, UTC (default: 7 days ago)")] = None,
    end: Annotated[str | None, typer.Option(help="Unix seconds or ISO date/time, exclusive (default: now)")] = None,
    bucket_width: Annotated[Literal["1m", "1h", "1d"], typer.Option(help="Bucket width")] = "1d",
    group_by: Annotated[list[str] | None, typer.Option(
        help="project_id, api_key_id, model (and line_item with --costs); repeat")] = None,
    project: Annotated[list[str] | None, typer.Option(help="Only these projects (repeat)")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Only these models (repeat)")] = None,
    costs: Annotated[bool, typer.Option("--costs", help="Costs in USD instead of tokens")] = False,
    data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Print token usage (or costs) per time bucket as a table: what GET /v1/organization/usage/completions
    (or /costs) returns, read from the configured database."""
    from parley.cli.usage import collect, default_start, parse_time, table
    from parley.errors import ParleyError
    from parley.services.usage_reports import BUCKETS, COSTS_MAX_LIMIT, ReportRequest

    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    try:
        start_time = parse_time(start) if start else default_start()
        end_time = parse_time(end) if end else None
    except ValueError as exc:
        typer.echo(f"parley: invalid time: {exc}", err=True)
        raise typer.Exit(2) from None
    groups = tuple(group_by or ())
    req = ReportRequest(start_time, end_time, bucket_width, groups, tuple(project or ()), (), tuple(model or ()),
                        limit=min(BUCKETS[bucket_width][2], COSTS_MAX_LIMIT) if costs else BUCKETS[bucket_width][2])
    try:
        buckets = asyncio.run(collect(settings, req, costs))
    except ParleyError as err:
        typer.echo(f"parley: {err.message}", err=True)
        raise typer.Exit(2) from None
    for line in table(buckets, groups, costs):
        typer.echo(line)


def _prompts_call(settings: Settings, method: str, *args: Any) -> Any:
    """Call a PromptsService method (which validates like the API does); its errors are printed plainly."""
    from parley.errors import ParleyError
    from parley.services.prompts import PromptsService
    from parley.store.sql import SqlStore

    async def run() -> Any:
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await SqlStore.open(settings.effective_database_url)
        try:
            return await getattr(PromptsService(store), method)(*args)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except ParleyError as err:
        where = f" ({err.param})" if err.param else ""
        typer.echo(f"parley: {err.message}{where}", err=True)
        raise typer.Exit(1) from None


@prompts_app.command("create")
def prompts_create(
    file: Annotated[Path, typer.Option("--file", help="JSON template: {instructions?, input?, model?, metadata?}")],
    project: Annotated[str, typer.Option(help="Project the prompt belongs to")] = "default",
    data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Create a prompt (version 1) from a JSON file; prints the prompt object."""
    from pydantic import ValidationError

    from parley.schema.prompts import PromptBody

    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    try:
        body = PromptBody.model_validate_json(file.read_bytes())
    except (OSError, ValidationError) as exc:
        typer.echo(f"parley: invalid template {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(_prompts_call(settings, "create", project, body)))


@prompts_app.command("list")
def prompts_list(
    project: Annotated[str, typer.Option(help="Project whose prompts to list")] = "default",
    data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Print the latest version of every prompt, one JSON object per line, oldest first."""
    from parley.store.base import PageQuery

    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    after: str | None = None
    while True:
        page = _prompts_call(settings, "list_latest", project, PageQuery(limit=100, order="asc", after=after))
        for prompt in page.data:
            typer.echo(json.dumps(prompt))
        if not page.has_more:
            break
        after = page.data[-1]["id"]


@prompts_app.command("show")
def prompts_show(
    prompt_id: str,
    version: Annotated[str | None, typer.Option(help="A version (default: the latest)")] = None,
    project: Annotated[str, typer.Option(help="Project the prompt belongs to")] = "default",
    data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    typer.echo(json.dumps(_prompts_call(settings, "retrieve", project, prompt_id, version), indent=2))


UploadPurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]


@files_app.command("upload")
def files_upload(
    paths: Annotated[list[Path], typer.Argument(help="Files to upload", exists=True, dir_okay=False,
                                                readable=True)],
    purpose: Annotated[UploadPurpose, typer.Option(help="The files' purpose")] = "assistants",
    project: Annotated[str, typer.Option(help="Project the files belong to")] = "default",
    expires_after: Annotated[int | None, typer.Option(
        "--expires-after", min=3600, max=2592000, help="Seconds until the files expire (default: never)")] = None,
    data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Upload files straight into the configured storage (no server needed); prints one file object per line."""
    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    failed = asyncio.run(_upload_files(settings, paths, project, purpose, expires_after))
    if failed:
        raise typer.Exit(1)


async def _upload_files(settings: Settings, paths: list[Path], project: str, purpose: str,
                        expires_after: int | None) -> int:
    """Upload each path as POST /v1/files would, reading it in 1 MiB pieces; returns how many failed."""
    from parley.errors import ParleyError
    from parley.services.files import FileLimits, FilesService, FileUpload, file_object
    from parley.store.blobs import CHUNK_BYTES, blob_storage
    from parley.store.sql import SqlStore

    async def pieces(path: Path) -> AsyncIterator[bytes]:
        with path.open("rb") as source:
            while piece := await asyncio.to_thread(source.read, CHUNK_BYTES):
                yield piece

    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await SqlStore.open(settings.effective_database_url)
    failed = 0
    try:
        cfg = settings.files
        files = FilesService(store, blob_storage(settings, store), FileLimits(cfg.max_bytes, cfg.upload_timeout_s))
        for path in paths:
            upload = FileUpload(path.name, purpose, expires_after)
            try:
                record = await files.create(project, pieces(path), upload)
            except (ParleyError, OSError) as err:
                typer.echo(f"parley: {path}: {getattr(err, 'message', None) or err}", err=True)
                failed += 1
                continue
            typer.echo(json.dumps(file_object(record)))
    finally:
        await store.close()
    return failed


@db_app.command("migrate")
def db_migrate(data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None) -> None:
    """Apply pending schema migrations (the server also does this at start-up)."""
    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    from parley.store.migrations import latest_version

    _store_call(settings, "any_active_key")
    typer.echo(f"schema at version {latest_version()}")


@config_app.command("show")
def config_show(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    data_dir: DataDirOpt = None, database_url: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Print the effective configuration (secrets redacted)."""
    settings = _settings(host=host, port=port, data_dir=data_dir, database_url=database_url, config_file=config)
    typer.echo(json.dumps(redacted(settings), indent=2))


@app.command()
def doctor(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Check what this host allows: which sandbox code_interpreter would run model code in, and why."""
    from parley.sandbox.detect import detect

    settings = _settings(data_dir=data_dir, config_file=config)
    cfg = settings.code_interpreter
    private = [settings.data_dir.resolve(), *([settings.config_file] if settings.config_file else [])]
    sandbox = asyncio.run(detect(cfg.sandbox, bwrap=cfg.bwrap_path, python=cfg.python,
                                 uid_base=cfg.sandbox_uid_base, private=private))
    typer.echo(f"code_interpreter sandbox: {sandbox.describe()}")
    typer.echo(f"sandbox python: {sandbox.runtime.python} (read-only: {', '.join(sandbox.runtime.read_only)})")
    if not sandbox.available:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
