import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isNumber, isOptional, isString, readRecord, recordFormat, type Fields } from '../../src/store/record-format.js';
import { captureLog } from '../support/captured-log.js';

interface Point {
  readonly x: number;
  readonly label?: string;
}
const isPoint = (f: Fields) => isNumber(f.x) && isOptional(f.label, isString);
// Version 2 renamed nothing; it only shows that each version has its own decoder.
const point = recordFormat<Point>({ name: 'point', version: 2, decoders: { 0: isPoint, 2: isPoint } });

describe('record format', () => {
  test('writes its version first and reads every version it has a decoder for as the same value', () => {
    assert.equal(point.encode({ x: 1, label: 'a' }), '{"v":2,"x":1,"label":"a"}');
    assert.deepEqual(point.decode('{"v":2,"x":1,"label":"a"}'), { x: 1, label: 'a' });
    assert.deepEqual(point.decode('{"x":1,"label":"a"}'), { x: 1, label: 'a' }, 'no v: version 0');
    assert.equal(point.decode('{"v":1,"x":1}'), undefined, 'a version without a decoder');
  });

  test('keeps fields it does not know, so an older replica rewriting a record carries a newer one’s additions', () => {
    const read = point.decode('{"v":2,"x":1,"addedLater":{"y":2}}');
    assert.deepEqual(read, { x: 1, addedLater: { y: 2 } });
    assert.equal(point.encode({ ...read!, x: 3 }), '{"v":2,"x":3,"addedLater":{"y":2}}');
  });

  test('names why a record was refused', () => {
    const cases: [string, string][] = [
      ['{', 'not_json'],
      ['42', 'not_an_object'],
      ['[{"x":1}]', 'not_an_object'],
      ['null', 'not_an_object'],
      ['{"v":3,"x":1}', 'unknown_version'],
      ['{"v":"2","x":1}', 'unknown_version'],
      ['{"v":null,"x":1}', 'unknown_version'],
      ['{"v":2}', 'wrong_shape'],
      ['{"x":"1"}', 'wrong_shape'],
      ['{"x":1,"label":null}', 'wrong_shape'],
      ['{"x":1e999}', 'wrong_shape'],
    ];
    for (const [raw, reason] of cases) {
      assert.equal(point.decode(raw), undefined, raw);
      assert.equal(point.rejectionOf(raw), reason, raw);
    }
  });

  test('readRecord: absent is silent, unreadable is one warning line, neither throws', () => {
    const log = captureLog();
    assert.equal(readRecord(point, undefined, 'point:1', log.logger), undefined);
    assert.deepEqual(readRecord(point, '{"x":1}', 'point:1', log.logger), { x: 1 });
    assert.deepEqual(log.lines(), []);
    assert.equal(readRecord(point, '{"v":9}', 'point:1', log.logger), undefined);
    const [line, ...rest] = log.lines();
    assert.deepEqual(rest, []);
    assert.equal(line?.level, 40);
    assert.deepEqual({ event: line?.event, record: line?.record, key: line?.key, reason: line?.reason, msg: line?.msg }, {
      event: 'store.record_unreadable',
      record: 'point',
      key: 'point:1',
      reason: 'unknown_version',
      msg: 'store.record_unreadable',
    });
  });

  test('a format must be able to read what it writes', () => {
    assert.throws(() => recordFormat<Point>({ name: 'broken', version: 2, decoders: { 0: isPoint } }), /no decoder for the version it writes/);
  });
});
