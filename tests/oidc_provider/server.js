// The OpenID provider the ILL Hub tests sign in against: the certified `oidc-provider`
// library itself (no stand-in), configured for tests. tests/support/oidc.py starts it.
//
// Environment:
//   OIDC_PORT            port on 127.0.0.1 (the issuer is http://127.0.0.1:<port>)
//   OIDC_REDIRECT_URIS   the hub's callback URL(s), space-separated
//   OIDC_CLIENT_SECRET   the secret of both clients below
//   OIDC_ACCOUNTS        JSON: {"login": {"name": ..., "groups": [...], ...}, ...}
//
// Clients: `illhub` (the hub: authorization code, PKCE S256 required, client_secret_basic)
// and `other` (a second relying party with the same callback, whose genuine ID tokens
// carry the wrong audience for the hub). Interactions: the library's development
// login form (any password; the login is the account), consent granted without asking
// (a consortium's own hub is a first-party client). Everything is kept in memory.
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('OIDC_PORT must name a port');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const redirectUris = (process.env.OIDC_REDIRECT_URIS || '').split(/\s+/).filter(Boolean);
const secret = process.env.OIDC_CLIENT_SECRET || '';
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS || '{}');

const client = (clientId) => ({
  client_id: clientId,
  client_secret: secret,
  redirect_uris: redirectUris,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
});

const configuration = {
  clients: [client('illhub'), client('other')],
  pkce: { required: () => true },
  // The hub's own claims travel with `profile`, so its default scopes ask for them.
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username', 'groups', 'illhub_agency', 'illhub_region'],
    email: ['email', 'email_verified'],
  },
  // Claims of the requested scopes in the ID token too (not only at userinfo).
  conformIdTokenClaims: false,
  cookies: { keys: ['illhub-test-provider-cookie-key'] },
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, sub) {
    const claims = accounts[sub];
    if (!claims) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, preferred_username: sub, ...claims };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email');
    await grant.save();
    return grant;
  },
  // An unknown login at the development form ends the flow with an error the hub shows.
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><title>error</title><pre id="error">${
      String(out.error).replace(/[<&]/g, '')}: ${
      String(out.error_description || '').replace(/[<&]/g, '')}</pre>`;
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const server = createServer(provider.callback());
server.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
