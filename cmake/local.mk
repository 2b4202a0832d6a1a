# SPDX-License-Identifier: MIT
# The CMake package (find_package(dashattn)). make writes the two files from
# their .in templates rather than configure, because the prefix-relative
# paths need libdir and includedir fully expanded.
cmakedir = $(libdir)/cmake/dashattn
cmake_DATA = cmake/dashattnConfig.cmake cmake/dashattnConfigVersion.cmake
EXTRA_DIST += cmake/dashattnConfig.cmake.in cmake/dashattnConfigVersion.cmake.in
CLEANFILES += $(cmake_DATA) cmake/dashattnConfig.cmake-t cmake/dashattnConfigVersion.cmake-t

# rel DIR: DIR below the prefix as ${_dashattn_prefix}/..., else DIR itself.
# up: the ../ that lead from cmakedir back to the prefix.
DA_CMAKE_SUBST = \
	rel() { case "$$1" in "$(prefix)"/*) printf '$${_dashattn_prefix}/%s' "$${1\#"$(prefix)"/}";; \
	  *) printf '%s' "$$1";; esac; }; \
	case "$(cmakedir)" in \
	  "$(prefix)"/*) up=$$(printf '%s\n' "$${cmakedir\#"$(prefix)"/}" | sed 's,[^/][^/]*,..,g');; \
	  *) up=.;; \
	esac; \
	major=$$(echo '$(PACKAGE_VERSION)' | cut -d. -f1); \
	minor=$$(echo '$(PACKAGE_VERSION)' | cut -d. -f2); \
	$(SED) -e "s|@DA_CMAKE_CMAKEDIR@|$(cmakedir)|g" -e "s|@DA_CMAKE_LIBDIR@|$(libdir)|g" \
	  -e "s|@DA_CMAKE_INCLUDEDIR@|$(includedir)|g" -e "s|@DA_CMAKE_UP@|$$up|g" \
	  -e "s|@DA_CMAKE_LIBDIR_RELOCATED@|$$(rel '$(libdir)')|g" \
	  -e "s|@DA_CMAKE_INCLUDEDIR_RELOCATED@|$$(rel '$(includedir)')|g" \
	  -e "s|@DA_CMAKE_PLUGIN_ABI@|$(DASHATTN_PLUGIN_ABI)|g" \
	  -e "s|@DA_CMAKE_VERSION@|$(PACKAGE_VERSION)|g" \
	  -e "s|@DA_CMAKE_VERSION_MAJOR@|$$major|g" -e "s|@DA_CMAKE_VERSION_MINOR@|$$minor|g" \
	  -e "s|@DA_CMAKE_SIZEOF_VOID_P@|$(SIZEOF_VOID_P)|g"

cmake/dashattnConfig.cmake: $(srcdir)/cmake/dashattnConfig.cmake.in Makefile
	$(AM_V_GEN)$(MKDIR_P) cmake && cmakedir='$(cmakedir)' && \
	$(DA_CMAKE_SUBST) $(srcdir)/cmake/dashattnConfig.cmake.in >$@-t && \
	! grep -n '@DA_CMAKE_[A-Z_]*@' $@-t && mv -f $@-t $@
cmake/dashattnConfigVersion.cmake: $(srcdir)/cmake/dashattnConfigVersion.cmake.in Makefile
	$(AM_V_GEN)$(MKDIR_P) cmake && cmakedir='$(cmakedir)' && \
	$(DA_CMAKE_SUBST) $(srcdir)/cmake/dashattnConfigVersion.cmake.in >$@-t && \
	! grep -n '@DA_CMAKE_[A-Z_]*@' $@-t && mv -f $@-t $@
