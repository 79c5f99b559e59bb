import { MemoryDisk } from '../src/index.ts';
import { storageContract } from './contract.ts';

let disks = 0;
storageContract({
  name: 'memory',
  async fresh() {
    const disk = new MemoryDisk({ name: `memory disk ${++disks}` });
    return {
      name: disk.name,
      open: () => disk.open(),
      openEngine: async () => disk.openEngine(),
      destroy: async () => {},
    };
  },
});
