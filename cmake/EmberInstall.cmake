# Installs headers, libember.so, the ember::ember CMake package and ember.pc.
include(CMakePackageConfigHelpers)

# What a program linking ember::ember gets from the imported target: the public headers need C++20.
target_compile_features(ember PUBLIC cxx_std_20)
# The installed libember.so keeps a RUNPATH to the non-system directories it links from (the CUDA
# toolkit's lib/, where cudart and cuBLAS live), so a program linking it needs nothing else.
set_target_properties(ember PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)
# Installed programs find libember.so.0 beside them, in ../lib.
# (EMBER_BUILD_TOOLS=OFF: there is no tools directory to ask.)
set(_ember_tool_targets "")
if(EMBER_BUILD_TOOLS)
  get_property(_ember_tool_targets DIRECTORY ${PROJECT_SOURCE_DIR}/tools PROPERTY BUILDSYSTEM_TARGETS)
endif()
foreach(_t IN LISTS _ember_tool_targets)
  get_target_property(_type ${_t} TYPE)
  if(_type STREQUAL "EXECUTABLE")
    set_target_properties(${_t} PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}" INSTALL_RPATH_USE_LINK_PATH ON)
  endif()
endforeach()

install(TARGETS ember EXPORT emberTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/ember DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT emberTargets NAMESPACE ember:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ember)
configure_package_config_file(cmake/emberConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/emberConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ember)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/emberConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/emberConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/emberConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ember)

# ember.pc finds its prefix from its own place (${pcfiledir}), so `cmake --install --prefix DIR` works.
set(EMBER_PC_PRIVATE_LIBS "")
if(EMBER_WITH_CUDA)
  set(EMBER_PC_PRIVATE_LIBS "-lcudart -lcublasLt -lcublas -lcudnn")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(EMBER_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(EMBER_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  file(RELATIVE_PATH _rel "/ember-root/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/ember-root")
  string(REGEX REPLACE "/$" "" _rel "${_rel}")
  set(EMBER_PC_PREFIX "\${pcfiledir}/${_rel}")
  set(EMBER_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(EMBER_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(EMBER_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(cmake/ember.pc.in ${CMAKE_CURRENT_BINARY_DIR}/ember.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/ember.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
