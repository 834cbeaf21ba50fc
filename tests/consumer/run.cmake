# ctest's consumer test: installs ember's build tree into a scratch prefix, checks the installed
# library's SONAME, then builds tests/consumer against the prefix twice, through find_package(ember)
# and through pkg-config, and runs the programs. It also checks that example.cpp is still the README's.
#   cmake -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK_DIR=... -DGENERATOR=... [-DCXX=...] [-DSANITIZE=...] -P run.cmake
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT ${var})
    message(FATAL_ERROR "run.cmake: -D${var}= is required")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGV}")
    message(FATAL_ERROR "consumer test: `${cmd}` failed (${rc})")
  endif()
endfunction()

# example.cpp is the README's C++ example, word for word after its first (comment) line.
file(READ ${SOURCE_DIR}/../../README.md readme)
file(READ ${SOURCE_DIR}/example.cpp example)
string(REGEX REPLACE "^//[^\n]*\n" "" example "${example}")
string(FIND "${readme}" "```cpp\n${example}```" at)
if(at EQUAL -1)
  message(FATAL_ERROR "consumer test: README.md's ```cpp block differs from tests/consumer/example.cpp; make them agree")
endif()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

file(GLOB libs ${prefix}/lib*/libember.so ${prefix}/lib/*/libember.so)
list(LENGTH libs n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "consumer test: expected one installed libember.so under ${prefix}, found: ${libs}")
endif()
get_filename_component(libdir ${libs} DIRECTORY)
execute_process(COMMAND readelf -d ${libs} OUTPUT_VARIABLE dyn RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT dyn MATCHES "Library soname: \\[libember\\.so\\.0\\]")
  message(FATAL_ERROR "consumer test: ${libs} has no SONAME libember.so.0:\n${dyn}")
endif()
message(STATUS "ok: ${libs} has SONAME libember.so.0")

set(san_flags "")
if(SANITIZE)
  set(san_flags "-fsanitize=${SANITIZE} -fno-omit-frame-pointer")
endif()

set(compiler_arg "")
if(CXX)
  set(compiler_arg -DCMAKE_CXX_COMPILER=${CXX})
endif()

# 1. find_package(ember), with nothing but the prefix.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build -G ${GENERATOR} -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS=${san_flags}" ${compiler_arg})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/ember_consumer)
run(${WORK_DIR}/build/ember_example)

# 2. pkg-config, as a Makefile user would: c++ main.cpp $(pkg-config --cflags --libs ember).
find_program(PKG_CONFIG pkg-config)
if(NOT CXX)
  find_program(CXX NAMES c++ g++)
endif()
if(NOT CXX)
  message(FATAL_ERROR "consumer test: no C++ compiler found for the pkg-config build")
endif()
if(NOT PKG_CONFIG)
  # tools/setup.sh installs pkg-config, so this happens only off the usual machines (the GPU machine).
  message(WARNING "consumer test: pkg-config not found: the pkg-config build is not checked here")
  return()
endif()
set(ENV{PKG_CONFIG_PATH} ${libdir}/pkgconfig)
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs ember OUTPUT_VARIABLE pc OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "consumer test: pkg-config --cflags --libs ember failed")
endif()
message(STATUS "pkg-config --cflags --libs ember: ${pc}")
separate_arguments(pc_args UNIX_COMMAND "${pc}")
separate_arguments(san_args UNIX_COMMAND "${san_flags}")
run(${CXX} ${san_args} ${SOURCE_DIR}/main.cpp -o ${WORK_DIR}/ember_consumer_pc ${pc_args} -Wl,-rpath,${libdir})
run(${WORK_DIR}/ember_consumer_pc)
