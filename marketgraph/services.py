"""Services: everything the lifespan opens and closes, which requests borrow."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from marketgraph.auth.login_codes import LoginCodeLimits, LoginCodes
from marketgraph.auth.tokens import TokenService, development_secret
from marketgraph.db import replicas
from marketgraph.db.budget import check_budget
from marketgraph.db.databases import Databases, open_databases
from marketgraph.db.pool import close_idle_overflow
from marketgraph.kv import KeyValueStore, open_kv
from marketgraph.settings import ConfigError, Settings
from marketgraph.sms import SmsSender, open_sms


@dataclass(slots=True)
class Services:
    """Everything the lifespan opens and closes; requests borrow from it."""

    settings: Settings
    databases: Databases
    kv: KeyValueStore
    tokens: TokenService
    login_codes: LoginCodes
    sms: SmsSender
    # Closes the pools' idle overflow connections and checks the replicas (started by
    # open_services, not by tests that build services over their own stores).
    housekeeping: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.housekeeping is not None:
            self.housekeeping.cancel()
            # wait, not await: the task's CancelledError is not this caller's cancellation.
            await asyncio.wait([self.housekeeping])
        await self.sms.close()
        await self.kv.close()
        await self.databases.dispose()


def build_services(settings: Settings, databases: Databases, kv: KeyValueStore) -> Services:
    """Services over open stores; refuses development-only secrets and SMS in production."""
    code_secret = (
        settings.login_code_secret.get_secret_value().encode()
        if settings.login_code_secret
        else None
    )
    if code_secret is None:
        if settings.is_production:
            raise ConfigError("production needs LOGIN_CODE_SECRET to be set")
        code_secret = development_secret(settings.data_dir, "login_code_secret")
    limits = LoginCodeLimits(
        phone_hourly=settings.login_code_phone_hourly,
        ip_hourly=settings.login_code_ip_hourly,
        market_daily=settings.sms_daily_market_limit,
        prefix_daily=settings.sms_daily_prefix_limit,
        daily_guesses=settings.login_code_daily_guesses,
    )
    return Services(
        settings=settings,
        databases=databases,
        kv=kv,
        tokens=TokenService.from_settings(settings),
        login_codes=LoginCodes(kv, code_secret, limits),
        sms=open_sms(settings),
    )


async def open_services(settings: Settings) -> Services:
    """Every service the lifespan needs; a `ConfigError` when the pools' maxima do not fit
    a server's max_connections (DB_BUDGET_CHECK=enforce)."""
    databases = await open_databases(settings)
    try:
        await check_budget(databases)
        kv = open_kv(settings.redis_url, settings.redis_timeout)
        services = build_services(settings, databases, kv)
    except BaseException:
        await databases.dispose()
        raise
    # Before the first request, so that reads may go to the standbys from the start.
    await replicas.check_all(databases.replica_sets)
    services.housekeeping = asyncio.create_task(_housekeeping(databases), name="housekeeping")
    return services


async def _housekeeping(databases: Databases) -> None:
    """Until cancelled: close the pools' idle overflow, check the replicas."""
    await asyncio.gather(
        close_idle_overflow(databases.engines), replicas.watch(databases.replica_sets)
    )
