// What a Fast DDS participant made from the default XML profile carries, for test_transport.py.
//
// Built by the test against Fast DDS 2.x (Debian 12's libfastrtps-dev 2.9, the line of Humble
// and Jazzy) and against Fast DDS 3.x (the venv's, the line of Kilted and Rolling). It creates a
// participant exactly as rmw_fastrtps does: from PARTICIPANT_QOS_DEFAULT, which each line fills
// from the profile named by its own variable (FASTRTPS_DEFAULT_PROFILES_FILE on 2.x,
// FASTDDS_DEFAULT_PROFILES_FILE on 3.x). It prints one line per fact:
//   fastdds <version>
//   profile <name> <0|1>            (the profile named on the command line was parsed)
//   builtin_transports <0|1>
//   transport SHM segment_size=<bytes> max_message_size=<bytes>
//   transport UDPv4 max_message_size=<bytes>
//   shm_mapping <path> <bytes>      (each /dev/shm file this process has mapped: the segments)
//   participant <0|1>
// and exits 0 when it got that far.
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <string>

#if __has_include(<fastdds/config.hpp>)  // Fast DDS 3.x
#include <fastdds/config.hpp>
#include <fastdds/dds/domain/DomainParticipant.hpp>
#include <fastdds/dds/domain/DomainParticipantFactory.hpp>
#include <fastdds/dds/domain/qos/DomainParticipantQos.hpp>
#include <fastdds/rtps/transport/UDPv4TransportDescriptor.hpp>
#include <fastdds/rtps/transport/shared_mem/SharedMemTransportDescriptor.hpp>
#define PROBE_VERSION FASTDDS_VERSION_STR
#define PROBE_XML_OK eprosima::fastdds::dds::RETCODE_OK
#else  // Fast DDS 2.x
#include <fastrtps/config.h>
#include <fastdds/dds/domain/DomainParticipant.hpp>
#include <fastdds/dds/domain/DomainParticipantFactory.hpp>
#include <fastdds/dds/domain/qos/DomainParticipantQos.hpp>
#include <fastdds/rtps/transport/UDPv4TransportDescriptor.h>
#include <fastdds/rtps/transport/shared_mem/SharedMemTransportDescriptor.h>
#define PROBE_VERSION FASTRTPS_VERSION_STR
#define PROBE_XML_OK eprosima::fastrtps::types::ReturnCode_t::RETCODE_OK
#endif

using eprosima::fastdds::dds::DomainParticipant;
using eprosima::fastdds::dds::DomainParticipantFactory;
using eprosima::fastdds::dds::DomainParticipantQos;
using eprosima::fastdds::rtps::SharedMemTransportDescriptor;
using eprosima::fastdds::rtps::UDPv4TransportDescriptor;

static void print_shm_mappings()
{
    std::ifstream maps("/proc/self/maps");
    std::set<std::string> seen;
    std::string line;
    while (std::getline(maps, line)) {
        const auto at = line.find("/dev/shm/");
        if (at == std::string::npos) {
            continue;
        }
        const std::string path = line.substr(at);
        struct stat info {};
        if (seen.insert(path).second && stat(path.c_str(), &info) == 0) {
            std::cout << "shm_mapping " << path << " " << info.st_size << "\n";
        }
    }
}

int main(int argc, char** argv)
{
    const int domain_id = argc > 1 ? std::atoi(argv[1]) : 0;
    const std::string profile = argc > 2 ? argv[2] : "";
    auto factory = DomainParticipantFactory::get_instance();
    std::cout << "fastdds " << PROBE_VERSION << "\n";
    // Loads the file named by this line's variable, as creating any participant does.
    factory->load_profiles();
    DomainParticipantQos named;
    std::cout << "profile " << profile << " "
              << (factory->get_participant_qos_from_profile(profile, named) == PROBE_XML_OK)
              << "\n";

    DomainParticipant* participant = factory->create_participant(
        domain_id, eprosima::fastdds::dds::PARTICIPANT_QOS_DEFAULT);
    std::cout << "participant " << (participant != nullptr) << "\n";
    if (participant == nullptr) {
        return 1;
    }
    const DomainParticipantQos& qos = participant->get_qos();
    std::cout << "builtin_transports " << qos.transport().use_builtin_transports << "\n";
    for (const auto& descriptor : qos.transport().user_transports) {
        if (auto shm = std::dynamic_pointer_cast<SharedMemTransportDescriptor>(descriptor)) {
            std::cout << "transport SHM segment_size=" << shm->segment_size()
                      << " max_message_size=" << shm->max_message_size() << "\n";
        } else if (auto udp = std::dynamic_pointer_cast<UDPv4TransportDescriptor>(descriptor)) {
            std::cout << "transport UDPv4 max_message_size=" << udp->max_message_size() << "\n";
        } else {
            std::cout << "transport other max_message_size=" << descriptor->max_message_size()
                      << "\n";
        }
    }
    print_shm_mappings();
    std::cout.flush();
    factory->delete_participant(participant);
    return 0;
}
