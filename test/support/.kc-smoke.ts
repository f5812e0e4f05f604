import { startKeycloak, KEYCLOAK_REALM as R } from './keycloak.js';
const kc = await startKeycloak();
console.log('keycloak', kc.version, 'ready after', kc.startupMs, 'ms', kc.issuer);
try {
  const tokenUrl = `${kc.issuer}/protocol/openid-connect/token`;
  const post = async (url: string, form: Record<string, string>, basic?: [string, string]) => {
    const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...(basic ? { authorization: 'Basic ' + Buffer.from(basic.join(':')).toString('base64') } : {}) }, body: new URLSearchParams(form) });
    return { status: r.status, body: await r.json().catch(() => null) as any };
  };
  const pw = await post(tokenUrl, { grant_type: 'password', client_id: R.client.clientId, client_secret: R.client.clientSecret, username: 'alice', password: 'alice-password', scope: 'openid' });
  console.log('password grant', pw.status, pw.body.scope, Object.keys(pw.body));
  const claims = JSON.parse(Buffer.from(pw.body.id_token.split('.')[1], 'base64url').toString());
  console.log('id token claims', claims);
  const wrong = await post(tokenUrl, { grant_type: 'password', client_id: R.client.clientId, client_secret: R.client.clientSecret, username: 'alice', password: 'nope', scope: 'openid' });
  console.log('wrong password', wrong.status, wrong.body);
  const native = await post(tokenUrl, { grant_type: 'password', client_id: R.nativeClient.clientId, username: 'bob', password: 'bob-password', scope: 'openid urn:matrix:client:api:* urn:matrix:client:device:BOBDEVICE1' });
  console.log('native', native.status, native.body.scope ?? native.body);
  const intro = await post(`${kc.issuer}/protocol/openid-connect/token/introspect`, { token: native.body.access_token }, [R.client.clientId, R.client.clientSecret]);
  console.log('introspect native token by proxy client', intro.status, JSON.stringify(intro.body));
  const refreshed = await post(tokenUrl, { grant_type: 'refresh_token', client_id: R.client.clientId, client_secret: R.client.clientSecret, refresh_token: pw.body.refresh_token });
  console.log('refresh', refreshed.status, Object.keys(refreshed.body));
  const meta = await (await fetch(`${kc.issuer}/.well-known/openid-configuration`)).json() as any;
  console.log('metadata', meta.issuer, meta.introspection_endpoint, meta.revocation_endpoint, meta.end_session_endpoint);
  await kc.logoutUser('bob');
  const intro2 = await post(`${kc.issuer}/protocol/openid-connect/token/introspect`, { token: native.body.access_token }, [R.client.clientId, R.client.clientSecret]);
  console.log('after logoutUser bob', intro2.body.active);
  await kc.disableUser('alice');
  const intro3 = await post(`${kc.issuer}/protocol/openid-connect/token/introspect`, { token: refreshed.body.access_token }, [R.client.clientId, R.client.clientSecret]);
  const pw2 = await post(tokenUrl, { grant_type: 'password', client_id: R.client.clientId, client_secret: R.client.clientSecret, username: 'alice', password: 'alice-password', scope: 'openid' });
  console.log('after disable alice: introspect', intro3.body.active, 'password grant', pw2.status, pw2.body);
  await kc.enableUser('alice');
  const pw3 = await post(tokenUrl, { grant_type: 'password', client_id: R.client.clientId, client_secret: R.client.clientSecret, username: 'alice', password: 'alice-password', scope: 'openid offline_access' });
  console.log('after enable: password grant', pw3.status, pw3.body.scope);
} finally {
  const t = performance.now(); await kc.stop(); console.log('stopped in', Math.round(performance.now() - t), 'ms');
}
