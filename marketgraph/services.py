"""Services: everything the lifespan opens and closes, which requests borrow."""

from __future__ import annotations

from dataclasses import dataclass

from marketgraph.auth.login_codes import LoginCodeLimits, LoginCodes
from marketgraph.auth.tokens import TokenService, development_secret
from marketgraph.db.databases import Databases, open_databases
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

    async def close(self) -> None:
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
    limits = LoginCodeLimits(settings.login_code_phone_hourly, settings.login_code_ip_hourly)
    return Services(
        settings=settings,
        databases=databases,
        kv=kv,
        tokens=TokenService.from_settings(settings),
        login_codes=LoginCodes(kv, code_secret, limits),
        sms=open_sms(settings),
    )


async def open_services(settings: Settings) -> Services:
    databases = await open_databases(settings)
    try:
        return build_services(settings, databases, open_kv(settings.redis_url))
    except BaseException:
        await databases.dispose()
        raise
