"""HTML of the sign-in form and the account page (web/signin.py), in the operators'
pages' style and with their structural escaping (web/operators/html.py)."""

from __future__ import annotations

from urllib.parse import quote

from accounts.roles import Principal
from web.operators.html import Safe, cat, layout, link, tag

LOCKED = ("This account is locked after too many wrong passwords; ask an operator to unlock "
          "it (run.py user unlock LOGIN).")
LOCKED_ZH = "该账户因口令错误次数过多已被锁定，请联系运营人员解锁。"
WRONG = "Wrong login or password. 账户名或口令错误。"
DISABLED = "This account is disabled; ask an operator. 该账户已停用，请联系运营人员。"


def signin_page(*, next_path: str, login: str = "", error: str | None = None,
                oidc: bool = False) -> str:
    form = tag("form",
               tag("label", "Login 账户名", for_="login"),
               tag("input", type="text", id="login", name="login", required=True,
                   value=login, autocomplete="username", autofocus=not login,
                   autocapitalize="none", spellcheck="false"),
               tag("label", "Password 口令", for_="password"),
               tag("input", type="password", id="password", name="password", required=True,
                   autocomplete="current-password", autofocus=bool(login)),
               tag("input", type="hidden", name="next", value=next_path),
               tag("button", "Sign in 登录", type="submit", id="sign-in"),
               method="post", action="/signin", class_="login")
    body = [tag("h1", "Sign in 登录")]
    if error:
        body.append(tag("p", error, class_="error", role="alert"))
    body.append(form)
    if oidc:  # the consortium's identity provider (web/oidc.py)
        body.append(tag("p", link(f"/signin/oidc?next={quote(next_path, safe='/')}",
                                  "Sign in with the consortium's account 统一认证登录",
                                  id="sign-in-oidc")))
    return layout("Sign in · ILL Hub", cat(body), signed_in=False)


def account_page(who: Principal, *, method: str, since: str, csrf: str) -> str:
    """Who you are, your grants, and the two sign-out buttons (each with the CSRF field)."""
    grants = [tag("li", str(g), data_role=g.role.value) for g in sorted(who.grants)]
    signout = tag("form", tag("button", "Sign out 退出", type="submit", id="sign-out"),
                  _raw(csrf), method="post", action="/signout")
    everywhere = tag("form", tag("button", "Sign out everywhere 在所有设备上退出",
                                 type="submit", id="sign-out-everywhere"),
                     _raw(csrf), method="post", action="/signout/everywhere")
    body = cat([
        tag("h1", "Your account 我的账户"),
        tag("table", tag("tr", tag("th", "Login 账户名"), tag("td", who.login, id="login")),
            tag("tr", tag("th", "Name 姓名"), tag("td", who.display_name, id="name")),
            tag("tr", tag("th", "Signed in 登录于"),
                tag("td", f"{since} ({method})", id="since"))),
        tag("h2", "Roles 角色"),
        tag("ul", *grants, id="grants") if grants else tag("p", "none 无", id="grants"),
        tag("p", link("/ops/", "Operators' pages 运营页面")),
        signout, everywhere])
    return layout("Account · ILL Hub", body, signed_in=True)


def _raw(markup: str) -> Safe:
    """`web.auth.csrf_input` built and escaped its hidden field already."""
    return Safe(markup)
