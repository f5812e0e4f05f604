import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formFields } from '../../src/http/body.js';

// formFields must answer exactly as URLSearchParams does (issue 19: it skips building one when nothing needs
// decoding); every input here is checked against URLSearchParams itself, for names present, absent and prefixes.
const INPUTS = [
  '',
  '&',
  '&&token=a&&',
  'token',
  'token=',
  'token&token=b',
  '=x&token=y',
  'token=a&token=b',
  'token=a=b',
  'tokenx=1&token=2',
  'tok=1&token=3',
  'token_type_hint=access_token&token=mcpa_abc_def',
  'token=mcpa_abc&token_type_hint=access_token',
  'a=1&b=2&token=last',
  'token=é&hint=ü',
  '\uFEFFtoken=bom',
  'token=\uFEFF',
  '?token=question',
  'token=?x',
  'token=a+b',
  'token=%41%42',
  'token=%zz',
  'to%6Ben=encoded-name',
  'token=lone\uD800surrogate',
  'token=pair\uD83D\uDE00',
  'token=a;b&x=1',
  ' token=space',
];
const NAMES = ['token', 'token_type_hint', 'tok', 'tokenx', '', 'a', 'x', 'hint', 'missing'];

test('formFields answers every field as URLSearchParams.get does', () => {
  for (const input of INPUTS) {
    const expected = new URLSearchParams(input);
    const actual = formFields(input);
    for (const name of NAMES) assert.equal(actual.get(name), expected.get(name), `${JSON.stringify(input)} → ${JSON.stringify(name)}`);
  }
});

test('a form with nothing to decode is read without URLSearchParams; anything to decode goes through it', () => {
  assert.ok(!(formFields('token=mcpa_x&token_type_hint=access_token') instanceof URLSearchParams));
  for (const input of ['token=a+b', 'token=%41', '?token=a', 'token=\uD800']) assert.ok(formFields(input) instanceof URLSearchParams, input);
});
