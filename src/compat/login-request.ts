import { MatrixError, matrixErrors } from '../errors/matrix-error.js';
import { expectObject, optionalBoolean, optionalString } from '../http/body.js';
import { DEVICE_ID_RULE, isSafeDeviceId } from '../sessions/device-id.js';
import { canonicalEmail, canonicalUser, type AccountName } from '../security/account-name.js';

/**
 * The body of POST /login (Matrix C-S spec, "POST /_matrix/client/v3/login"), parsed once at the edge into one
 * branch per login type with typed fields; the handlers never read the raw body again.
 */
export type LoginRequest = PasswordLogin | TokenLogin | AppserviceLogin;

interface LoginCommon {
  readonly deviceId?: string;
  readonly initialDeviceDisplayName?: string;
  readonly refreshToken: boolean;
}

export interface PasswordLogin extends LoginCommon {
  readonly type: 'm.login.password';
  readonly identifier: Identifier;
  readonly password: string;
}

export interface TokenLogin extends LoginCommon {
  readonly type: 'm.login.token';
  readonly token: string;
}

export interface AppserviceLogin extends LoginCommon {
  readonly type: 'm.login.application_service';
  readonly identifier: Identifier;
}

/** Who the client says it is, already in its canonical form (security/account-name.ts). */
export type Identifier = AccountName;

/** Unknown login types, like Synapse: 400 M_UNKNOWN "Invalid login type". */
export function invalidLoginType(): MatrixError {
  return new MatrixError(400, 'M_UNKNOWN', 'Invalid login type');
}

/** What the server offers decides before the body's details: a disabled type is "Invalid login type" whatever it carries. */
export interface LoginOptions {
  readonly serverName: string;
  readonly passwordLogin: boolean;
  readonly appserviceLogin: boolean;
}

export function parseLoginRequest(raw: unknown, options: LoginOptions): LoginRequest {
  const { serverName } = options;
  const body = expectObject(raw);
  const type = optionalString(body, 'type');
  if (type === undefined) throw matrixErrors.badJson("Missing property 'type'");
  const common = commonFields(body);
  switch (type) {
    case 'm.login.password': {
      if (!options.passwordLogin) throw invalidLoginType();
      const password = optionalString(body, 'password');
      if (password === undefined) throw matrixErrors.badJson("Missing property 'password'");
      return { type, ...common, identifier: identifierOf(body, serverName), password };
    }
    case 'm.login.token': {
      const token = optionalString(body, 'token');
      if (token === undefined) throw matrixErrors.badJson("Missing property 'token'");
      return { type, ...common, token };
    }
    case 'm.login.application_service':
      if (!options.appserviceLogin) {
        throw new MatrixError(400, 'M_APPSERVICE_LOGIN_UNSUPPORTED', 'Application service login is not configured on this server');
      }
      return { type, ...common, identifier: identifierOf(body, serverName) };
    default:
      throw invalidLoginType();
  }
}

function commonFields(body: Record<string, unknown>): LoginCommon {
  const deviceId = optionalString(body, 'device_id');
  if (deviceId !== undefined && !isSafeDeviceId(deviceId)) {
    throw new MatrixError(400, 'M_INVALID_PARAM', `device_id must be ${DEVICE_ID_RULE}`);
  }
  const initialDeviceDisplayName = optionalString(body, 'initial_device_display_name');
  return {
    ...(deviceId === undefined ? {} : { deviceId }),
    ...(initialDeviceDisplayName === undefined ? {} : { initialDeviceDisplayName }),
    refreshToken: optionalBoolean(body, 'refresh_token') ?? false,
  };
}

/**
 * The deprecated top-level `user` wins over `identifier` (as in Synapse and MAS); `m.id.thirdparty` email (and the
 * deprecated top-level medium/address) is passed to the OP as the username. Every form comes out canonical. The
 * `auth` dict of User-Interactive Auth's m.login.password stage has the same shape (C-S spec, "Password-based").
 */
export function identifierOf(body: Record<string, unknown>, serverName: string): Identifier {
  const legacyUser = optionalString(body, 'user');
  if (legacyUser !== undefined) return fromUser(legacyUser, serverName);

  const medium = optionalString(body, 'medium');
  const address = optionalString(body, 'address');
  if (medium !== undefined || address !== undefined) return fromThirdParty(medium, address);

  const raw = body['identifier'];
  if (raw === undefined || raw === null) throw matrixErrors.badJson("Missing property 'identifier'");
  const identifier = expectObject(raw, "'identifier'");
  switch (optionalString(identifier, 'type')) {
    case 'm.id.user': {
      const user = optionalString(identifier, 'user');
      if (user === undefined) throw matrixErrors.badJson("Missing property 'identifier.user'");
      return fromUser(user, serverName);
    }
    case 'm.id.thirdparty':
      return fromThirdParty(optionalString(identifier, 'medium'), optionalString(identifier, 'address'));
    default:
      throw new MatrixError(400, 'M_UNKNOWN', 'Unsupported login identifier');
  }
}

function fromUser(user: string, serverName: string): Identifier {
  return canonicalUser(user, serverName);
}

function fromThirdParty(medium: string | undefined, address: string | undefined): Identifier {
  if (medium !== 'email' || address === undefined) {
    throw new MatrixError(400, 'M_UNKNOWN', 'Unsupported login identifier');
  }
  return canonicalEmail(address);
}
