#ifndef SNAPMOUNT_CXML2_SHIM_H
#define SNAPMOUNT_CXML2_SHIM_H

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlversion.h>

/// xmlParserVersion is a macro over a thread-local accessor, which Swift cannot import.
static inline const char *_Nonnull cxml2_parser_version(void) {
    const char *version = xmlParserVersion;
    return version ? version : "unknown";
}

#endif
