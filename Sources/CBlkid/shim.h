#ifndef SNAPMOUNT_CBLKID_SHIM_H
#define SNAPMOUNT_CBLKID_SHIM_H

#include <stddef.h>
#include <blkid.h>

/// The run-time libblkid version ("2.38.1"), not the one compiled against.
static inline const char *_Nonnull cblkid_library_version(void) {
    const char *version = NULL;
    blkid_get_library_version(&version, NULL);
    return version ? version : "unknown";
}

/// Low-level probing with superblocks (type, label, UUID, usage) and partition tables on.
/// Returns 0 on success.
static inline int cblkid_configure_probe(blkid_probe _Nonnull probe) {
    if (blkid_probe_enable_superblocks(probe, 1) != 0) return -1;
    if (blkid_probe_set_superblocks_flags(probe, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID | BLKID_SUBLKS_TYPE |
                                                 BLKID_SUBLKS_USAGE | BLKID_SUBLKS_VERSION) != 0) return -1;
    if (blkid_probe_enable_partitions(probe, 1) != 0) return -1;
    if (blkid_probe_set_partitions_flags(probe, BLKID_PARTS_MAGIC) != 0) return -1;
    return 0;
}

/// The value of a probed tag ("TYPE", "LABEL", "PTTYPE", …), or NULL.
static inline const char *_Nullable cblkid_value(blkid_probe _Nonnull probe, const char *_Nonnull name) {
    const char *value = NULL;
    if (blkid_probe_lookup_value(probe, name, &value, NULL) != 0) return NULL;
    return value;
}

#endif
