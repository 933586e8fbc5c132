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

#endif
