import { expect } from 'chai';
import {
  indexedDbName,
  openIndexedDbEngine,
  openIndexedDbStorage,
} from '../src/indexeddb.browser.ts';
import { storageContract } from './contract.ts';

let databases = 0;
const run = `${Date.now()}-${Math.random()}`;

storageContract({
  name: 'IndexedDB',
  async fresh() {
    const nodeId = `node-${run}-${++databases}`;
    const name = indexedDbName('test', nodeId);
    return {
      name,
      open: () => openIndexedDbStorage({ clusterId: 'test', nodeId }),
      openEngine: () => openIndexedDbEngine(name),
      destroy: () =>
        new Promise<void>((resolve, reject) => {
          const request = indexedDB.deleteDatabase(name);
          request.onsuccess = () => resolve();
          request.onerror = () => reject(request.error);
        }),
    };
  },
});

describe('storage: IndexedDB specifics', () => {
  it('names one database per cluster and node', () => {
    expect(indexedDbName('c1', 'n1')).to.not.equal(indexedDbName('c1', 'n2'));
    expect(indexedDbName('c1', 'n1')).to.not.equal(indexedDbName('c2', 'n1'));
  });
});
